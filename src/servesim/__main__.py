"""``python -m servesim`` runs the command-line interface."""

from servesim.cli.main import main

if __name__ == "__main__":
    main()
