__version__ = "0.1.0"

def load_ipython_extension(ip):
    "`%load_ext fmops_nb`: register the `%fmops` magic."
    from .magics import load_ipython_extension as _load
    _load(ip)

def unload_ipython_extension(ip):
    "`%unload_ext fmops_nb`: remove exactly what loading added."
    from .magics import unload_ipython_extension as _unload
    _unload(ip)
