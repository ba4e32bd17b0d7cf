#!/usr/bin/env python
"""Django's command-line utility, stopping with one clear message on a configuration error."""

import os
import sys


def main():
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "caloria.settings")
    from dbops import envinfo
    from dbops.startup import load_settings_or_exit

    # validate_environment reports configuration problems itself, beside every other check.
    envinfo.DEFER_PROBLEMS = sys.argv[1:2] == ["validate_environment"]
    load_settings_or_exit(program="caloria")
    from django.core.management import execute_from_command_line

    execute_from_command_line(sys.argv)


if __name__ == "__main__":
    main()
