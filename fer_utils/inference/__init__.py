"""Trained models in use: :mod:`.predict` (model bundles and the one inference path),
:mod:`.fused_bundle` (a CNN + captioner + text encoder + head served as one model), :mod:`.faces`
(finding and cropping the face in a photo), :mod:`.uploads` (checking an uploaded image),
:mod:`.explain` (Grad-CAM and the caption's effect), :mod:`.scale` (captions and features of a
large data set on Ray). The web site, the dashboard and the CLI use these; the study writes the
bundles they read."""
