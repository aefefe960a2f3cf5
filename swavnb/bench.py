"""``python -m swavnb.bench``: our training step against the usual pipeline
(:mod:`swavnb.speed.bench`)."""

from swavnb.speed.bench import main

if __name__ == "__main__":
    main()
