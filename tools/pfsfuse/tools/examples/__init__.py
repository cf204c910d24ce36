"""Local stand-ins for the docker images of Pachyderm's beginner tutorial (OpenCV, ImageMagick),
written with Pillow: `python3 -m pfsfuse.tools.examples.edges` and `...examples.montage`."""
