from meetnet.cli import main

main()
