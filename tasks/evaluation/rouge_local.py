"""ROUGE as a local `evaluate` metric module: `evaluate.load("rouge")` fetches its script from the hub,
which these machines cannot reach. Load with `evaluate.load(path_to_this_file)`.

Imports stay one per line: evaluate's import scanner misreads `import a, b`.
"""

import datasets
import evaluate
from rouge_score import rouge_scorer

_DESCRIPTION = "ROUGE-1/2/L/Lsum F-measures (rouge-score): the mean over the predictions, or one per example."
_KWARGS = (
    "predictions: list of str; references: list of str; use_stemmer: bool (default False); "
    "use_aggregator: bool (default True; False returns a list of per-example scores per type, as HF rouge)"
)


class RougeLocal(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation="Lin, 2004. ROUGE: A Package for Automatic Evaluation of Summaries.",
            inputs_description=_KWARGS,
            features=datasets.Features(
                {"predictions": datasets.Value("string"), "references": datasets.Value("string")}
            ),
        )

    def _compute(self, predictions, references, use_stemmer=False, use_aggregator=True):
        types = ["rouge1", "rouge2", "rougeL", "rougeLsum"]
        scorer = rouge_scorer.RougeScorer(types, use_stemmer=use_stemmer)
        per_example = {t: [] for t in types}
        for pred, ref in zip(predictions, references, strict=True):
            scores = scorer.score(ref, pred)
            for t in types:
                per_example[t].append(scores[t].fmeasure)
        if not use_aggregator:
            return per_example
        n = max(len(predictions), 1)
        return {t: sum(v) / n for t, v in per_example.items()}
