// Box Director's frontend entry. Every .js under web/ is loaded by ComfyUI as an extension.
import { app } from "../../scripts/app.js";

app.registerExtension({
  name: "boxdirector.core",
});
