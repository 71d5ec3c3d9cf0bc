from etlb.cli import main

main()
