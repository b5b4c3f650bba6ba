"""The transfer engine: the part plan (`plan`), what uploads share (`budget`), reading pieces
from disk (`reading`) and hashing them together (`hashing`, `_md5lanes.c`), the concurrent
verified PUTs (`engine`). aiohttp's errors become ours in `uploader._http`."""
