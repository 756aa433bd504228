"""``python -m fedcare`` is the ``fedcare`` command."""

from fedcare.cli.main import main

if __name__ == "__main__":
    main()
