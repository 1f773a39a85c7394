from lattice.cli import main

main()
