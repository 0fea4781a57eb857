from services.ingest_worker.service import main

main()
