#!/bin/sh
# hello, the nixtest example: only shell builtins, so that a profile of hello
# alone runs it.  The greeting is in the greeting package (a dependency).
case "$1" in
    --version) echo "hello (nixtest example) 2.12.1"; exit 0 ;;
    --help) echo "usage: hello [--version] [--greeting=TEXT]"; exit 0 ;;
    --greeting=*) echo "${1#--greeting=}"; exit 0 ;;
    "") ;;
    *) echo "hello: unknown option: $1" >&2; exit 2 ;;
esac
read -r line < @greeting@/share/greeting/hello.txt
echo "$line"
