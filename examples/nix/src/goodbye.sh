#!/bin/sh
# goodbye, the nixtest example's broken package: it drops a letter (on
# purpose: package_tests/goodbye/ has a test that finds it).
case "$1" in
    --version) echo "goodbye (nixtest example) 1.0"; exit 0 ;;
esac
read -r line < @greeting@/share/greeting/goodbye.txt
echo "${line%%bye,*}by,${line#*bye,}"
