from inkloop_cli import main

main()
