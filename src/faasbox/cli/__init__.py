"""The ``faasbox`` command line. It talks to a gateway only through its HTTP API
(``faasbox.client``); ``main.py`` wires the commands, one module per command group."""
