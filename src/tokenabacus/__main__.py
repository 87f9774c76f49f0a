from tokenabacus.cli.main import main

main()
