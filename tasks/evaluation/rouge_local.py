"""ROUGE as a local `evaluate` metric module: `evaluate.load("rouge")` fetches its script from the hub,
which these machines cannot reach. Load with `evaluate.load(path_to_this_file)`.

Imports stay one per line: evaluate's import scanner misreads `import a, b`.
"""

import datasets
import evaluate
from rouge_score import rouge_scorer

_DESCRIPTION = "ROUGE-1/2/L/Lsum F-measures (rouge-score), aggregated by mean over the predictions."
_KWARGS = "predictions: list of str; references: list of str; use_stemmer: bool (default False)"


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

    def _compute(self, predictions, references, use_stemmer=False):
        types = ["rouge1", "rouge2", "rougeL", "rougeLsum"]
        scorer = rouge_scorer.RougeScorer(types, use_stemmer=use_stemmer)
        sums = dict.fromkeys(types, 0.0)
        for pred, ref in zip(predictions, references, strict=True):
            scores = scorer.score(ref, pred)
            for t in types:
                sums[t] += scores[t].fmeasure
        n = max(len(predictions), 1)
        return {t: sums[t] / n for t in types}
