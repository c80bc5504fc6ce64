"""``python -m mcjepa_cli`` runs the ``mcjepa`` command line."""

from mcjepa_cli.main import main

if __name__ == "__main__":
    main()
