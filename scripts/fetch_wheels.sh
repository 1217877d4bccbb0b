#!/usr/bin/env bash
# Download, where the package index is reachable, the wheels an offline GPU machine needs to run
# scripts/gpu_check.sh beyond its own torch / transformers / peft / accelerate / numpy / jinja2 / typer / rich / tqdm /
# pyyaml / tokenizers / safetensors, for Python 3.12 on x86-64 Linux (about 44 MB).
# Usage: scripts/fetch_wheels.sh DIR      then on that machine: scripts/gpu_check.sh --wheels DIR
set -euo pipefail
dir=${1:?usage: fetch_wheels.sh DIR}; mkdir -p "$dir"
plat=(--platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_24_x86_64
      --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 --platform manylinux1_x86_64)
for p in pydantic==2.14.4 pydantic_core==2.50.5 annotated-types==0.8.0 typing-inspection==0.4.5 \
         pettingzoo==1.27.0 gymnasium==1.4.0 Farama-Notifications==0.0.6 pygame==2.6.1 Shimmy==2.0.1 \
         open-spiel==2.0.2 ml-collections==1.1.0 termcolor==3.3.0 xgrammar==0.2.8 apache-tvm-ffi==0.1.15.post2 \
         trl==1.16.0 datasets==5.2.0 dill==0.4.0 multiprocess==0.70.18 gguf==0.17.1 \
         openskill==6.2.0 choix==0.4.1 openai==3.57.0 jiter==0.19.0 distro==1.9.0 sniffio==1.3.1 \
         httpx2==2.16.2 httpcore2==2.16.2 truststore==0.10.5 pytest iniconfig pluggy; do
  python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp "${plat[@]}" -d "$dir" "$p"
done
python3 -m pip wheel -q --no-deps -w "$dir" rlcard==1.2.0   # sdist only: a pure-Python wheel is built here
du -sh "$dir"
