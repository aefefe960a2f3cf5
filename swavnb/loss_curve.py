"""``python -m swavnb.loss_curve``: the same run through both pipelines, step by step
(:mod:`swavnb.speed.loss_curve`)."""

from swavnb.speed.loss_curve import main

if __name__ == "__main__":
    main()
