"""The pack's custom link types. Names are global across a ComfyUI install and saved in workflows,
so they carry the pack's prefix and never change."""

from comfy_api.latest import io

Trajectory = io.Custom("BOXDIRECTOR_TRAJECTORY")   # core.trajectory.Trajectory
Regions = io.Custom("BOXDIRECTOR_REGIONS")         # core.regions.Regions
# ComfyUI's own track type (WanMove): {"track_path": [T, N, 2] pixels, "track_visibility": [T, N]}.
Tracks = io.Custom("TRACKS")
