from setuptools import find_packages, setup

PACKAGE = "awml_deploy_core"

setup(
    name=PACKAGE,
    version="0.1.0",
    description="Export, verification and evaluation of AWML perception models for ROS 2 / Autoware.",
    license="Apache-2.0",
    python_requires=">=3.10",
    packages=find_packages(exclude=["test", "test.*"]),
    package_data={PACKAGE: ["checkpoints/*.pth", "checkpoints/*.json", "configs/*.yaml"]},
    data_files=[
        ("share/ament_index/resource_index/packages", [f"resource/{PACKAGE}"]),
        (f"share/{PACKAGE}", ["package.xml"]),
    ],
    install_requires=[
        "numpy>=1.24",
        "torch>=2.1",
        "onnx>=1.15",
        "onnxruntime>=1.17",
        "pydantic>=2.5",
        "PyYAML>=6",
        "rich>=13",
        "tqdm>=4.60",
        "matplotlib>=3.7",
        "rosbags>=0.10",
    ],
    extras_require={"tensorrt": ["tensorrt>=8.6", "polygraphy>=0.49"], "simplify": ["onnxslim>=0.1.30"],
                    "fleet": ["ray>=2.40"]},
    zip_safe=False,
    entry_points={
        "console_scripts": [
            # `ros2 run awml_deploy_core export cfg.yaml` on a ROS install ...
            "export = awml_deploy_core.cli:export_main",
            # ... and the same verbs without ROS: `awml-deploy export cfg.yaml`.
            "awml-deploy = awml_deploy_core.cli:main",
        ],
    },
)
