"""What `yoco fetch` can get and how: the registry, the HTTP and Drive downloaders, dataset readers.

    registry.py   the bundled list of artifacts (+ YOCO_REGISTRY overrides) and name selection
    http.py       plain HTTP(S) downloads: Range resume, retries with backoff, timeouts, progress
    gdrive.py     Google Drive: folder listing and file download through gdown, error-page classification
    datasets.py   readers for the real datasets' on-disk formats, registered with `data.real`

The stage that runs a download through the store lives in `stages/fetching.py`.
"""
