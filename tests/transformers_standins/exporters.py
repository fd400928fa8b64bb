"""Stand-in for transformers' tests/exporters/test_export.py, which the sdist lacks.

ModelTesterMixin inherits `ExportTesterMixin`. This one checks what a user of an image model relies on:
`torch.export` captures each model class, with fixed shapes and with a symbolic batch, height and width, and the
exported program computes what the model computes. A tester may set `export_forward_kwargs` (extra forward
arguments for the export, e.g. `interpolate_pos_encoding=True`) and must have `patch_size` for symbolic image sizes.
"""

from __future__ import annotations

import torch


def first_tensor(outputs) -> torch.Tensor:
    return outputs[0] if isinstance(outputs, (tuple, list)) else outputs.to_tuple()[0]


class ExportTesterMixin:
    test_torch_exportable = True

    def _export_and_compare(self, dynamic: bool) -> None:
        if not self.test_torch_exportable:
            self.skipTest("the tester marks its models as not exportable")
        for model_class in self.all_model_classes:
            config, inputs = self.model_tester.prepare_config_and_inputs_for_common()
            model = model_class(config).eval()
            inputs = {**inputs, **getattr(self.model_tester, "export_forward_kwargs", {})}
            dynamic_shapes, runs = None, [inputs]
            if dynamic:
                patch = self.model_tester.patch_size
                batch = torch.export.Dim("batch", min=1, max=64)
                rows, cols = torch.export.Dim("rows", min=1, max=32), torch.export.Dim("cols", min=1, max=32)
                shapes = {0: batch, 2: patch * rows, 3: patch * cols}
                dynamic_shapes = {name: shapes if name == "pixel_values" else None for name in inputs}
                # The one program must also serve another batch size and a non-square image of another size.
                batch_size, channels, height, width = inputs["pixel_values"].shape
                other = torch.randn(batch_size + 1, channels, height + 2 * patch, width + patch)
                runs.append({**inputs, "pixel_values": other})
            with torch.no_grad():
                program = torch.export.export(model, args=(), kwargs=inputs, dynamic_shapes=dynamic_shapes,
                                              strict=False)
                for run in runs:
                    torch.testing.assert_close(first_tensor(program.module()(**run)), first_tensor(model(**run)),
                                               atol=1e-4, rtol=1e-4, msg=lambda m: f"{model_class.__name__}: {m}")

    def test_torch_export(self):
        self._export_and_compare(dynamic=False)

    def test_torch_export_dynamic_shapes(self):
        self._export_and_compare(dynamic=True)

