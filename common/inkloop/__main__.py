from inkloop.cli import main

main()
