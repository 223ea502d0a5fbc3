from labpgt.cli.app import main

main()
