from __future__ import annotations

from .celery_app import ADD_QUEUE
from .tasks import add

if __name__ == "__main__":
    r = add.apply_async(args=[2, 1], queue=ADD_QUEUE)
    r.wait()
    print(r.get())
