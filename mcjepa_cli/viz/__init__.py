"""Visualisation of flow, occlusion, features and propagated masks (``mcjepa visualize``).

``panels`` turns tensors into RGB panels, ``writer`` writes frames to .mp4/.gif/.png
atomically, ``run`` holds the plain function behind the command.
"""
