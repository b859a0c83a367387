def test_hello_default(load, event, context):
    mod = load("hello")
    assert mod.handle(event(), context) == "Hello from faasbox!"


def test_hello_name(load, event, context):
    mod = load("hello")
    assert mod.handle(event(query="name=Ada"), context) == "Hello, Ada, from faasbox!"
    assert mod.handle(event(query="name="), context) == "Hello from faasbox!"


def test_hello_is_quiet(load, event, context, capsys):
    load("hello").handle(event(), context)
    assert capsys.readouterr() == ("", "")
