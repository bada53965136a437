#!/bin/sh
echo "hello from nixtest"
