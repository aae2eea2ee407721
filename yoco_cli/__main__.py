from yoco_cli.cli.app import main

main()
