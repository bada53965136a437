# bash features, builtins only (no coreutils in this profile)
set -euo pipefail

items=(a b c)
echo "array: ${#items[@]} items, last=${items[-1]}"

declare -A colour=([banana]=yellow [apple]=red)
keys="${!colour[*]}"
out=""
for key in apple banana; do out+="$key=${colour[$key]} "; done
echo "assoc: ${out% }"
[[ $keys == *apple* && $keys == *banana* ]]

n=$(( (7 * 6) ))
printf 'arith: %d 0x%x\n' "$n" "$n"

file=nixtest-file.tar.gz
base=${file%.gz}
echo "expansion: ${base/file/FILE} ${file##*.}"

if [[ "2014-01-01" =~ ^([0-9]{4})-([0-9]{2}) ]]; then
    echo "regex: ${BASH_REMATCH[1]} ${BASH_REMATCH[2]}"
fi

where=outer
f() { local where=inner; echo -n "local: $where "; }
f; echo "$where"

mapfile -t lines < <(printf '%s\n' one two three)
echo "mapfile: ${#lines[@]} lines"

read -r first rest <<< "all features ok"
echo "$first $rest"
