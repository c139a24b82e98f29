from roicurate.cli import main

main()
