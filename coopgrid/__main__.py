from coopgrid.cli import main

main()
