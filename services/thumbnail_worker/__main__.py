from services.thumbnail_worker.service import main

main()
