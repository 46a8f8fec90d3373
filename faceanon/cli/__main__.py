"""``python -m faceanon.cli``: the ``faceanon`` command where no console script is installed
(a GPU machine running from a source tree with ``PYTHONPATH=.``)."""

from faceanon.cli import main

main(prog_name="faceanon")
