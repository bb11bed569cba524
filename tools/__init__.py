"""Command-line tools of the pack that talk to a ComfyUI server over HTTP (no ComfyUI import):

- ``python -m tools.workflow``: check a UI workflow against a server's /object_info, convert it to
  API format.
- ``python -m tools.batch``: queue a sweep of jobs on one or more servers, with a manifest and resume.
- ``python -m tools.thumbnails``: draw the thumbnails of example_workflows/.
"""
