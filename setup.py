"""Relit Hands: real-time relightable two-hand renderer.

The repository folders are the product's map (engine/ shaders/ models/ viewer/ tools/);
they install under one import name, ``relit_hands``:

    engine/   -> relit_hands            (run-time core and the Engine API)
    tools/    -> relit_hands.tools      (offline tools and the ``relit-hands`` CLI)
    viewer/   -> relit_hands.viewer     (desktop viewer)
    shaders/  -> relit_hands.shaders    (GLSL, package data)
    models/   -> relit_hands.models     (shipped assets, package data)
"""
from setuptools import setup

setup(
    name="relit-hands",
    version="0.1.0",
    description="Real-time relightable two-hand renderer (RelightableHands-style student, PBR baseline)",
    python_requires=">=3.10",
    packages=[
        "relit_hands",
        "relit_hands.tools",
        "relit_hands.viewer",
        "relit_hands.shaders",
        "relit_hands.models",
    ],
    package_dir={
        "relit_hands": "engine",
        "relit_hands.tools": "tools",
        "relit_hands.viewer": "viewer",
        "relit_hands.shaders": "shaders",
        "relit_hands.models": "models",
    },
    package_data={
        "relit_hands.shaders": ["*.glsl", "*.vert", "*.frag", "*.comp"],
        "relit_hands.models": ["*.json", "*.md", "hand/*", "hand_v2/*", "environments/*", "student/*", "teacher/*"],
    },
    install_requires=[
        "numpy>=1.24,<3",
        # OpenEXR I/O (the OpenCV wheels do not read .exr); .hdr and .png go through OpenCV.
        "openexr>=3.2,<4",
        "scipy>=1.10,<2",
        # torch: on CPU-only machines install the local CPU build first (`pip install
        # torch==2.13.0`); this range is then satisfied and pulls nothing more.
        "torch>=2.1,<3",
        "trimesh>=4.0,<6",
        # HDR (.hdr) and OpenEXR I/O, PNG writing: one maintained reader/writer.
        "opencv-python-headless>=4.8,<6",
        "pillow>=10,<14",
        "tqdm>=4.60,<5",
        # Offscreen OpenGL (EGL headless: Mesa llvmpipe on CPU, NVIDIA on GPUs).
        "moderngl>=5.10,<6",
        "matplotlib>=3.7,<4",
        # weights of the student (and teacher) load without pickle
        "safetensors>=0.4,<1",
    ],
    extras_require={
        # imgui-bundle >= 1.92: the viewer's moderngl renderer uses imgui 1.92's dynamic font textures
        "viewer": ["glfw>=2.6,<3", "imgui-bundle>=1.92,<2"],
        # Offline asset build: marching cubes, simplification, UV atlas packing, chart flattening
        # (libigl: LSCM + ARAP for asset v2's semantic charts).
        "assets": ["scikit-image>=0.21,<1", "fast-simplification>=0.1.7,<1", "xatlas>=0.0.9,<0.1",
                   "libigl>=2.5,<3"],
        "features": ["embreex>=2.17,<5"],
        # ONNX export of the student + ONNX Runtime inference (CPU); TensorRT consumes the same graph.
        "onnx": ["onnx>=1.15,<2", "onnxruntime>=1.17,<2"],
        # Evaluation metrics: SSIM (scikit-image) and NVIDIA's HDR-FLIP (no network weights needed).
        "eval": ["scikit-image>=0.21,<1", "flip-evaluator>=1.7,<2"],
        "mano": ["smplx>=0.1.28,<0.2"],
        # VR: examples/openxr_hands.py (OpenXR hand tracking + swapchains); written against pyopenxr
        # 1.1's API (OpenXR 1.1 bindings, 1.1.3601 .. 1.1.6501 on PyPI); brings glfw and PyOpenGL.
        "vr": ["pyopenxr>=1.1,<2"],
        # mitsuba: tested with 3.9.1 (the light stage's LLVM variant needs Debian's libllvm19, see install.sh);
        # pyoidn: Intel Open Image Denoise for the teacher's training targets (train-teacher --denoise)
        "train": ["mitsuba>=3.9,<4", "tensorboard>=2.14,<3", "pyoidn>=2.4,<3"],
        "cuda": ["triton>=3.0,<5", "diffrp-nvdiffrast>=0.3,<0.4"],
        # triton: its interpreter mode runs the CUDA ray-casting kernels on CPU tensors in tests.
        "dev": ["pytest>=7.4,<10", "pytest-timeout>=2.1,<3", "triton>=3.0,<5",
                "onnx>=1.15,<2", "onnxruntime>=1.17,<2",
                # rtree: trimesh's closest-point queries in the surface tests
                "rtree>=1.0,<2"],
    },
    entry_points={"console_scripts": ["relit-hands=relit_hands.tools.cli:main"]},
)
