"""A backup storage that damages what it is given (one byte in the middle of each backup): a
disk or a storage that writes something else than it was handed. Used by a child process
whose settings are tests.corrupting_settings."""

from django.core.files.base import ContentFile
from django.core.files.storage import FileSystemStorage, Storage


class CorruptingStorage(Storage):
    def __init__(self, location):
        self.files = FileSystemStorage(location=location)

    def _save(self, name, content):
        data = bytearray(content.read())
        if not name.endswith(".metadata"):
            data[len(data) // 2] ^= 0xFF
        return self.files._save(name, ContentFile(bytes(data)))

    def _open(self, name, mode="rb"):
        return self.files._open(name, mode)

    def exists(self, name):
        return self.files.exists(name)

    def delete(self, name):
        self.files.delete(name)

    def path(self, name):
        return self.files.path(name)

    def listdir(self, path):
        return self.files.listdir(path)

    def size(self, name):
        return self.files.size(name)
