"""``python -m cascade_cli`` behaves exactly like the ``cascade`` command."""

from cascade_cli.cli.main import run

if __name__ == "__main__":
    run()
