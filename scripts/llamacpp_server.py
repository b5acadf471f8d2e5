"""Start llama-cpp-python's OpenAI-compatible server with the AMX work-around.

    pip install 'llama-cpp-python==0.3.36' fastapi uvicorn sse-starlette starlette-context pydantic-settings
    python3 scripts/llamacpp_server.py --model MODEL.gguf --host 127.0.0.1 --port 8080

Every argument goes to `python3 -m llama_cpp.server`. On these VMs the CPU advertises AMX
but faults on it (SIGILL at the first generation): `use_extra_bufts = False` in the model
parameters avoids the AMX buffer types, so the defaults are patched before the server
creates its `Llama`. Used by the endpoint test of `scalpel eval --endpoint`.
"""
import runpy
import sys

from llamacpp_compat import avoid_amx  # scripts/ is on sys.path when run as a script

avoid_amx()

if __name__ == "__main__":
    sys.argv[0] = "llama_cpp.server"
    runpy.run_module("llama_cpp.server", run_name="__main__", alter_sys=True)
