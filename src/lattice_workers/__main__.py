from lattice_workers.cli import main

main()
