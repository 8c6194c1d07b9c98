"""pie: populations of dense and compressed image classifiers, and what compression costs class by class."""

import setuptools

setuptools.setup(
    name="pie",
    version="0.1.0",
    description="Pruning identified exemplars: measure the disparate impact of model compression.",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    python_requires=">=3.10",
    packages=setuptools.find_packages(include=["pie", "pie.*", "train", "analysis"]),
    # The report's stylesheet and scripts, inlined into every report.html and compare.html; the class groupings
    # shipped with pie (pie.slices.SHIPPED_GROUPINGS).
    package_data={
        "pie.report": ["report.css", "report.js", "compare.js"],
        "pie": [
            "class_groups/digits.json",
            "class_groups/fashion_mnist.json",
            "class_groups/imagenet2012_wordnet.json",
        ],
    },
    install_requires=[
        # TF-MOT 0.8.1 needs Keras 2 models: tf-keras pinned to the TensorFlow release it was built for.
        "tensorflow>=2.21,<2.22",
        "tf-keras>=2.21,<2.22",
        "tensorflow-model-optimization==0.8.1",
        "tensorflow-datasets>=4.9.10",
        "importlib_resources",  # tfds 4.9.10 needs it when it builds a dataset
        "tensorboard>=2.21",  # TF-MOT's PruningSummaries write sparsity to TensorBoard
        "ml_collections",
        "absl-py",
        "google-crc32c",  # checksums of whole prediction files, checked in one call when they are read
        "numpy>=1.26",
        "scipy>=1.11",  # stats.false_discovery_control
        "pandas>=2.0",
        # Parquet prediction tables (pie.prediction_tables); tensorflow-datasets installs it too.
        "pyarrow>=14",
        "scikit-learn",  # the embedded digits dataset (load_digits)
        "threadpoolctl",  # BLAS on one thread in the modal-label kernels (significance.modal_disagreements)
        "matplotlib",
        "pillow",
    ],
    extras_require={
        # apache-beam in the tests too: tests/test_beam_analysis.py checks that the Beam analysis matches the
        # in-memory one file for file (on the in-process DirectRunner engine).
        # pyink and ruff pinned: a new release may format or lint differently, and CI checks the code with them.
        "test": [
            "pytest>=8",
            "pytest-xdist>=3",
            "hypothesis>=6",
            "playwright>=1.40",
            "apache-beam>=2.77,<3",
            "pyink==26.5.1",
            "ruff==0.17.6",
            "fairlearn>=0.15,<0.16",
        ],
        "litert": ["ai-edge-litert>=2.3"],
        # The Beam analysis (analysis/beam_analyze.py) for prediction sets beyond one machine's memory. 2.77 installs
        # beside TensorFlow 2.21 but pins protobuf < 7, pillow < 13, pyarrow < 26 and python-dateutil < 3.
        "beam": ["apache-beam>=2.77,<3"],
        # pie.slices.metric_frame: slice_stats.csv's accuracies as a Fairlearn MetricFrame (also in `test`).
        "fairlearn": ["fairlearn>=0.15,<0.16"],
    },
)
