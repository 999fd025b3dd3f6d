from orchestration.local import main

main()
