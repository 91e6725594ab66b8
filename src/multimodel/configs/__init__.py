"""The presets shipped with the package, one Python file each defining ``CONFIG``.

Name one on the command line (``multimodel train --config demo``) or load it with
``multimodel.config.load_config("demo")``; each file's docstring gives its command, run time
and expected result. ``tiny`` is the tests' model, ``demo`` the CPU main job, ``hour`` the
demo's model for an hour on larger built-in data, ``paper`` the paper's sizes.
"""
