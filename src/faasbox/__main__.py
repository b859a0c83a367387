from faasbox.cli.main import main

main()
