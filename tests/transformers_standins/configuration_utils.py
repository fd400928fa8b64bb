"""Stand-in for transformers' tests/utils/test_configuration_utils.py, which the sdist lacks.

ConfigTester.check_config_arguments_init builds a config from `config_common_kwargs` and checks that each of them
was set: fields every transformers 5 config takes, each given a value other than its default.
"""

config_common_kwargs = {
    "return_dict": False,
    "output_hidden_states": True,
    "output_attentions": True,
    "dtype": "float16",
    "chunk_size_feed_forward": 5,
    "architectures": ["ViTForImageClassification"],
    "id2label": {0: "label"},
    "label2id": {"label": "0"},
    "problem_type": "regression",
}
