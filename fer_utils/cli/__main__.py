from fer_utils.cli import main

main()
