%# The actions of one generation (aigen/web/actions.py). Session-free, like the section it is in (the section is
%# cached): only links, to pages that carry the CSRF token; the copy button works with actions.js, and is shown only with it (at the end, so nothing moves).
<p class="gen-actions">
  % if g['done']:
  <a class="action" href="/g/{{g['id']}}/download.zip" download>Download all {{g['done']}} files (zip)</a>
  % end
  <a class="action" href="/g/{{g['id']}}/again">Make again</a>
  <a class="action action-danger" href="/g/{{g['id']}}/delete">Delete</a>
  <button type="button" class="link-button copy-prompt" data-copy-for="g-{{g['id']}}">Copy prompt</button>
</p>
