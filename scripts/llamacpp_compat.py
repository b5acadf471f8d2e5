"""Makes llama-cpp-python usable on these VMs, for every script that loads a model.

The CPU advertises AMX but faults on it (SIGILL at the first generation), even with llama.cpp
built with AMX off: `use_extra_bufts = False` in the model parameters keeps llama.cpp off the
AMX buffer types. `Llama` reads its defaults through the ctypes bindings module, so the
default-parameters function is wrapped there; call `avoid_amx()` before loading a model.
"""

import llama_cpp.llama_cpp as bindings

_default_params = bindings.llama_model_default_params


def _params():
    p = _default_params()
    p.use_extra_bufts = False
    return p


def avoid_amx():
    """Makes every later `Llama(...)` load with `use_extra_bufts = False`."""
    bindings.llama_model_default_params = _params
