"""Box Director: direct video diffusion models with boxes (ComfyUI node pack).

ComfyUI loads this folder as a V3 extension through ``comfy_entrypoint``. Only that and
``WEB_DIRECTORY`` are exported: the loader uses NODE_CLASS_MAPPINGS *or else* comfy_entrypoint.
"""

WEB_DIRECTORY = "./web"


async def comfy_entrypoint():
    # Imported lazily so that ``core`` stays importable without ComfyUI (scripts, tests).
    from .nodes import BoxDirectorExtension

    return BoxDirectorExtension()


__all__ = ["WEB_DIRECTORY", "comfy_entrypoint"]
