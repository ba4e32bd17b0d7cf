"""What every management command of this project shares."""


class UsageErrorExitsOne:
    """A bad option or argument exits 1, as every other bad input does, not argparse's 2.

    Mix in before the command's base class: `class Command(UsageErrorExitsOne, BaseCommand)`.
    """

    def create_parser(self, prog_name, subcommand, **kwargs):
        parser = super().create_parser(prog_name, subcommand, **kwargs)
        argparse_exit = parser.exit

        def exit_one_on_usage_error(status=0, message=None):
            argparse_exit(1 if status == 2 else status, message)

        parser.exit = exit_one_on_usage_error
        return parser
