"""Installs the project folders as one distribution, ``stellarpop``.

The top-level folders (schema/, components/, pipeline/, transforms/, serving/) become the
sub-packages ``stellarpop.components`` and so on, so nothing with a generic name such as
``pipeline`` lands in site-packages. Dependencies are pinned in requirements.lock; the
ranges below only say what the code needs.
"""

from setuptools import find_packages, setup

FOLDERS = ("schema", "components", "pipeline", "transforms", "serving")

packages = [f"stellarpop.{p}" for p in find_packages(include=[f"{f}*" for f in FOLDERS])]

setup(
    name="stellarpop",
    version="0.1.0",
    description="Stellar populations of galaxies from SDSS spectra with a TFX pipeline",
    python_requires=">=3.10,<3.11",
    packages=packages,
    package_dir={f"stellarpop.{f}": f for f in FOLDERS},
    # The shipped model (TF Serving layout) and the pipeline configurations.
    package_data={"stellarpop.serving": ["models/*/*/*", "models/*/*/*/*"], "stellarpop.pipeline": ["*.yaml"]},
    install_requires=[
        "tfx==1.16.*",
        "tensorflow==2.16.*",
        "apache-beam[gcp]==2.59.*",
        "astropy>=6.1,<7",
        "numpy>=1.26,<2",
        "ppxf>=9.5,<10",
        "typer>=0.12",
        "rich>=13",
    ],
    entry_points={"console_scripts": ["stellarpop = stellarpop.pipeline.cli:main"]},
)
