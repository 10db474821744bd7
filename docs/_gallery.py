"""Order of the gallery: the quickstart first, then the other examples by file name."""

from sphinx_gallery.sorting import FileNameSortKey


class QuickstartFirst(FileNameSortKey):
    def __call__(self, filename):
        return (filename != "quickstart.py", super().__call__(filename))
