"""`python -m ray_app` behaves exactly like the `ray-app` console script."""

from ray_app.cli import main

if __name__ == "__main__":
    main()
